"""The human side of ``topo compare``: fROI tables, maps, parcels, fROIs, thresholds, islands.

Everything here reads what a user brings (nothing is downloaded, nothing in ``../shared`` is
required) and turns bad input into :class:`~topocli.errors.TopoInputError` naming the file.
Modules: :mod:`~topocli.human.profiles` (fROI response tables), :mod:`~topocli.human.maps`
(maps and parcels), :mod:`~topocli.human.froi` (split-half fROIs),
:mod:`~topocli.human.thresholding` (nilearn thresholds and cluster tables) and
:mod:`~topocli.human.moran` (island Moran's I).
"""
