"""Checks that the stored log is the one that was signed: start-up checks, the checkpoint file, fsck."""
