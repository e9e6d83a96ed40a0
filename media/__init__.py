"""Packaged real media: `ocsim package` turns a video file (or a generated test source) into
an HLS title of H.264/AAC fMP4 renditions with a digest list, and the origin serves it.

    media.ladder     the renditions to encode (bitrate, picture size, audio share)
    media.mp4        a read-only ISO BMFF box walker (codec string and size from an init segment)
    media.playlists  the master and media playlists of a packaged title, from measured segments
    media.digests    the digest list: byte length and SHA-256 of every file of a title
    media.encode     ffmpeg at the rim: probing an input, the encoder command, progress
    media.package    packaging one title: cache by content hash, temp dir, rename
    media.cli        `ocsim package`
"""
