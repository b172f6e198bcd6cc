"""Training data: everything between a survey spec and the batches a network trains on.

One job per module; imports go one way, down this list (a module imports only those above it):

* :mod:`~mulens_sbi.data.parallel` – spawned CPU worker processes (``cpu_worker``, ``map_files``);
* :mod:`~mulens_sbi.data.lightcurves` – light-curve generation: prior draws, cadence, noiseless flux,
  noise model, one noisy realisation (:func:`~mulens_sbi.data.lightcurves.simulate_lightcurves`);
* :mod:`~mulens_sbi.data.classes` – event classes (``caustic_crossing``: a used data point with the
  source inside a caustic) and the class flags of simulated rows;
* :mod:`~mulens_sbi.data.conditioned` – prior draws conditioned on an event class, by exact rejection;
* :mod:`~mulens_sbi.data.shards` – the parquet shard format (``mulens-sbi simulate`` folders): making
  a shard, and its one reader (``table_arrays`` / ``read_shards`` / ``read_simulation``);
* :mod:`~mulens_sbi.data.prebin` – pre-binning of stored light curves onto the network's cells, cached;
* :mod:`~mulens_sbi.data.samplers` – the training samplers (fresh noise per batch, enrichment mixture,
  sharp-feature emphasis, device-resident sampling);
* :mod:`~mulens_sbi.data.stream` – fresh simulations while training (a sampler whose rows grow);
* :mod:`~mulens_sbi.data.ondevice` – every batch simulated afresh inside one compiled function on the
  accelerator (whole-season light curves, caustic-crossing enrichment without a stored set).

The package imports :mod:`mulens_sbi.lensing`, :mod:`mulens_sbi.lightcurve`, :mod:`mulens_sbi.survey`
and :mod:`mulens_sbi.preprocess`, never the network code (:mod:`mulens_sbi.npe`) or the commands
(:mod:`mulens_sbi.simulate`, :mod:`mulens_sbi.training`, ...) that use it. This ``__init__`` imports
nothing: import the submodule you need.
"""
