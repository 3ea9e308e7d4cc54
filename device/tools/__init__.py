"""Tools around the daemon: doctor, bench, demo, synthetic frames."""
