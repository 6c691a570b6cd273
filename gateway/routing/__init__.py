"""Pure routing rules; see README.md in this folder."""
