"""topo: in-silico localizer screening on topographic neural networks."""

__version__ = "0.1.0"
