"""Stimulus sets built offline on the user's machine from packaged material (``topo stimuli``).

Nothing here ships images or audio: a set is assembled from installed Debian packages
(tuxpaint stamps, Noto Color Emoji, asterisk prompts, sonic-pi samples, wallpapers), the
fonts matplotlib ships, the project's own text and ``espeak-ng``, normalised, and written with
``PROVENANCE.csv`` and the licence texts of every source it used.

Modules: :mod:`.sources` (finding the material, its version and licence), :mod:`.images` and
:mod:`.audio` (normalisation, scrambling, word rendering, synthesis, quilting), :mod:`.sets`
(the set definitions) and :mod:`.build` (the deterministic, atomic build and its cache).
"""
