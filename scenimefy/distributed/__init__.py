"""Ray layer: builds datasets, trainers and actor pools, and binds the stage loops to Ray."""
