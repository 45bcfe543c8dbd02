"""The recipes shipped inside the package (`configs/*.yaml`), nameable by their name.

`fit --config cnn_fast` trains the packaged `cnn_fast.yaml` from any folder and from a wheel
install; a path that exists always wins over a name.
"""

from pathlib import Path

from fashion_lightning.errors import FashionLightningError

RECIPES = Path(__file__).resolve().parents[1] / "configs"
# The recipe `fit` trains when given no --config.
DEFAULT_RECIPE = RECIPES / "cnn.yaml"
CONFIG_OPTIONS = ("--config", "-c")


def recipe_names() -> list[str]:
    """The shipped recipes' names (their search spaces, X.tune.yaml, are not recipes)."""
    return sorted(p.stem for p in RECIPES.glob("*.yaml") if not p.stem.endswith(".tune"))


def resolve_recipe(value: str) -> str:
    """A `--config` value as a path: itself when it exists, else the shipped recipe it names."""
    if Path(value).exists():
        return value
    name = Path(value).name.removesuffix(".yaml").removesuffix(".yml")
    if Path(value).parent == Path(".") and name in recipe_names():
        return str(RECIPES / f"{name}.yaml")
    raise FashionLightningError(
        f"--config {value}: no such file, and no shipped recipe of that name. Give a YAML file, "
        f"or one of the recipes: {', '.join(recipe_names())}."
    )


def with_recipe_paths(argv: list[str]) -> list[str]:
    """`argv` with every `--config NAME` / `--config=NAME` turned into the recipe's path."""
    out = list(argv)
    for i, arg in enumerate(out):
        name, equals, value = arg.partition("=")
        if name in CONFIG_OPTIONS and equals:
            out[i] = f"{name}={resolve_recipe(value)}"
        elif arg in CONFIG_OPTIONS and i + 1 < len(out) and not out[i + 1].startswith("-"):
            out[i + 1] = resolve_recipe(out[i + 1])
    return out


def config_paths(argv: list[str]) -> list[str]:
    """The files given to `--config` (or `-c`) in `argv`, in order."""
    paths = [b for a, b in zip(argv, argv[1:]) if a in CONFIG_OPTIONS]
    given = (a.partition("=") for a in argv)
    return paths + [value for name, equals, value in given if equals and name in CONFIG_OPTIONS]
