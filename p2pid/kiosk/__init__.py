"""The headless kiosk/TV: pairing front end and the routines people may run on it."""
