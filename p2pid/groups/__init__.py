"""Groups: the signed membership log (sans-IO) that every member verifies and replays."""
