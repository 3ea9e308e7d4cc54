"""The reject path: calibrating the operating point and measuring near and far OOD."""
