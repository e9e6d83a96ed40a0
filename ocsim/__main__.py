from ocsim.cli import main

main()
