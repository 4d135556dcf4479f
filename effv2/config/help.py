"""``python run.py --help``: the groups a user can choose from, for Hydra's help template
(``hydra.help.template`` in conf/config.yaml reads it as ``${effv2.config_groups:}``).

Hydra's own ``$APP_CONFIG_GROUPS`` lists every group of the config repository, the schemas'
(``schema/optimizer``, ...) too, which are no choice of the user's."""

from __future__ import annotations

from effv2.config.schema import SCHEMA_GROUP

# Hydra's own groups worth a line in effv2's help: how a sweep's jobs run (SLURM, local processes)
HYDRA_GROUPS_SHOWN = ("hydra/launcher", "hydra/sweeper")


def config_groups() -> str:
    """One line per choosable group, ``group: option, option, ...``, the schemas' groups left out."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    lines = []

    def walk(parent: str) -> None:
        for name in sorted(loader.list_groups(parent)):
            group = f"{parent}/{name}" if parent else name
            if group in ("hydra", SCHEMA_GROUP):
                continue
            if options := loader.get_group_options(group):
                lines.append(f"  {group}: {', '.join(options)}")
            walk(group)

    walk("")
    for group in HYDRA_GROUPS_SHOWN:
        lines.append(f"  {group}: {', '.join(loader.get_group_options(group))}")
    return "\n".join(lines)
