"""Fleet operations: deploy over ssh, pull-update rollouts, the bundle server, watching
devices, collecting labelled frames, the signing keys."""
