"""The daemon's local web page: live view, events, status, upload and labelling."""
