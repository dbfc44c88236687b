"""``topo stimuli``: list the buildable stimulus sets, build one into a folder."""
