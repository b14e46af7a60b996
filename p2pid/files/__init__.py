"""File sharing (issue 8): offers, the bulk path, resumable transfers."""
