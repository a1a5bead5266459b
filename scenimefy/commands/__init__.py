"""The front doors: one module per subcommand of the `scenimefy` CLI (cli.py only dispatches).

A workload's module (train, pretrain, finetune, pairs, pipeline, tune, evaluate, demo) holds its
one parser (`add_arguments`) and its one run function (`run`); `jobs_runner` is the entry that
both `scenimefy <workload>` and `python jobs/<workload>.py` call.
"""
