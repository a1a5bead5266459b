"""The in-process local Ray cluster the Ray tests share: 4 logical CPUs, no GPU, no dashboard."""


def init_local_ray() -> None:
    import ray

    ray.init(
        address="local",
        num_cpus=4,
        num_gpus=0,
        include_dashboard=False,
        object_store_memory=300 * 1024**2,
        log_to_driver=False,
    )
