"""The spikeops backend new legacy neurons run on (set by ``spikeops.legacy.install``)."""
backend = "auto"
