"""Ray layer: builds datasets, trainers and actor pools, binds the stage loops to Ray, tracks
runs in MLflow, and chains the stages (the pipeline driver). The only package that imports Ray
or MLflow; docs/ray.md says what runs where."""
