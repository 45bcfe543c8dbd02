"""The command line, `python -m fashion_lightning COMMAND ...`: Lightning's `fit | validate | test
| predict` (`lightning.py`) and the project's own commands (`commands.COMMANDS`) behind one
entry, one `--help` and one error style: a user mistake is one paragraph on stderr, exit status 2.

The project's commands start without Lightning: their options are parsed by jsonargparse alone,
and the LightningCLI is imported only for fit, validate, test and predict, so `serve --model
FILE.onnx` never loads torch.
"""

import inspect
import sys
from collections.abc import Callable
from importlib.metadata import version
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, get_args, get_origin, get_type_hints

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser

from fashion_lightning.cli.commands import COMMANDS, DESCRIPTION, LIGHTNING_HELP, PROG
from fashion_lightning.cli.recipes import RECIPES, config_paths, with_recipe_paths
from fashion_lightning.errors import (
    FashionLightningError,
    exit_with_usage_error,
    option_names,
    paragraph,
)

if TYPE_CHECKING:
    from lightning.pytorch.cli import ArgsType


BOOLEANS = {"true", "false", "yes", "no", "on", "off"}  # values a switch may be given
# fit, validate, test and predict's spelling, which the project's commands take too.
ALIASES = {"--data.data_dir": "--data_dir"}
OWN_CONFIG_HELP = "A YAML file of this command's own options (e.g. ckpt_path: ..., out: ...)."
RECIPE_KEYS = {"model", "data", "trainer"}


class CommandParser(ArgumentParser):
    """A project command's options, from its function's typed, documented arguments; a bad
    option is one paragraph instead of the full usage text."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse's own trial parses expect an exception
            super().error(message, ex)
        exit_with_usage_error(self.prog, message, option_names(self))


def split_args(args: list[str], own: set[str]) -> tuple[list[str], list[str]]:
    """A command's own options (`own`, `--name value` or `--name=value`) and the rest, which it
    passes on to the fits it runs (tune's trials)."""
    mine: list[str] = []
    rest: list[str] = []
    it = iter(args)
    for arg in it:
        name = arg.removeprefix("--").split("=", 1)[0]
        if arg in ("-h", "--help"):
            mine.append(arg)
        elif arg.startswith("--") and name in own:
            mine.append(arg)
            if "=" not in arg:
                mine.extend(islice(it, 1))  # its value; the parser reports a missing one
        else:
            rest.append(arg)
    return mine, rest


def run_command(name: str, args: list[str]) -> Any:
    """Parse `args` for the project command `name` (its function's typed, documented arguments)
    and call it. A command that runs fits gets every option it does not know as `fit_args`."""
    command = COMMANDS[name]
    function = command.load()
    summary = inspect.getdoc(function).split("\n\nArgs:")[0]  # the options list the arguments
    parser = CommandParser(prog=f"{PROG} {name}", description=summary)
    args = as_typed(args, function)
    if not command.passes_on_unknown:
        check_own_config(name, args, function)
        parser.add_argument("--config", action=ActionConfigFile, help=OWN_CONFIG_HELP)
        parser.add_function_arguments(function)
        args = appending(args, options_typed(function, list))
        options = parser.parse_args(args).as_dict()
        options.pop("config", None)  # the files it read, not an option of the command
        return function(**options)
    parser.add_function_arguments(function, skip={"fit_args"})
    own = {p for p in inspect.signature(function).parameters if p != "fit_args"}
    mine, fit_args = split_args(args, own)
    return function(**parser.parse_args(mine).as_dict(), fit_args=fit_args)


def check_own_config(name: str, args: list[str], function: Callable[..., Any]) -> None:
    """A --config given to a command that takes a checkpoint holds that command's options; a fit
    recipe (model, data, trainer) there is a mix-up of two meanings, told as such."""
    own = list(inspect.signature(function).parameters)
    for path in config_paths(args):
        try:
            keys = set(yaml.safe_load(Path(path).read_text()) or {})
        except (OSError, yaml.YAMLError, UnicodeDecodeError, TypeError):
            continue  # the parser reports a missing or broken file
        if keys & RECIPE_KEYS and not keys & set(own):
            shown = Path(path).stem if Path(path).parent == RECIPES else path  # as typed
            raise FashionLightningError(
                f"--config {shown} is a fit recipe ({', '.join(sorted(keys & RECIPE_KEYS))}), but "
                f"`{name}`'s --config holds its own options ({', '.join(own)}). `{name}` reads "
                f"the network and the data settings from the checkpoint (--ckpt_path), so it "
                f"needs no recipe."
            )


def options_typed(function: Callable[..., Any], kind: type) -> set[str]:
    """The arguments of `function` typed as `kind`, alone or in a union (`list[str] | None`)."""
    names = set()
    for name, hint in get_type_hints(function).items():
        if any(h is kind or get_origin(h) is kind for h in (hint, *get_args(hint))):
            names.add(name)
    return names


def as_typed(args: list[str], function: Callable[..., Any]) -> list[str]:
    """The options as users type them, in the form the parser reads: a bare boolean switch
    (`--robustness`) as `--robustness=true`, and a value that starts with a dash
    (`--sort -val/acc`) joined to its option, which argparse would take for an option itself."""
    switches = options_typed(function, bool)
    names = set(inspect.signature(function).parameters) - {"fit_args"}
    out: list[str] = []
    it = iter(enumerate(args))
    for i, arg in it:
        option, equals, value = arg.partition("=")
        if option in ALIASES and ALIASES[option].removeprefix("--") in names:
            arg = ALIASES[option] + equals + value  # one spelling for every command
        name = arg.removeprefix("--")
        after = args[i + 1] if i + 1 < len(args) else None
        if not arg.startswith("--") or "=" in arg or name not in names:
            out.append(arg)
        elif name in switches and (after is None or after.lower() not in BOOLEANS):
            out.append(f"{arg}=true")
        elif after is not None and after.startswith("-") and not after.startswith("--"):
            out.append(f"{arg}={after}")
            next(it)
        else:
            out.append(arg)
    return out


def appending(args: list[str], names: set[str]) -> list[str]:
    """A list option given several times appends (`--where A --where B`: both), as
    jsonargparse's `--where+ A` does, instead of the last one replacing the others."""
    out = []
    for arg in args:
        name, equals, value = arg.removeprefix("--").partition("=")
        named = arg.startswith("--") and name in names
        out.append(f"--{name}+{equals}{value}" if named else arg)
    return out


TOP_LEVEL_ONLY = ("-h", "--help", "--version")  # answered without importing torch or Lightning


def top_level_parser() -> ArgumentParser:
    """The program's own `--help` (every command in one line) and `--version`: the same lines as
    the LightningCLI's top-level parser gives, without importing it."""
    parser = CommandParser(prog=PROG, description=DESCRIPTION, version=version("fashion_lightning"))
    commands = parser.add_subcommands(required=True, dest="command")
    helps = {**LIGHTNING_HELP, **{name: command.help for name, command in COMMANDS.items()}}
    for name, help_line in helps.items():
        commands.add_subcommand(name, ArgumentParser(prog=f"{PROG} {name}"), help=help_line)
    return parser


def cli_main(args: "ArgsType" = None) -> Any:
    """Run the CLI on `args` (default: sys.argv); tests call this with a list of strings.
    A command of `COMMANDS` runs its function; fit, validate, test and predict run through the
    LightningCLI."""
    argv = sys.argv[1:] if args is None else args
    try:
        if isinstance(argv, list) and argv and argv[0] in TOP_LEVEL_ONLY:
            top_level_parser().parse_args(argv)  # prints the help or the version, and exits
        if isinstance(argv, list) and argv and argv[0] in COMMANDS:
            return run_command(argv[0], with_recipe_paths(argv[1:]))
        from fashion_lightning.cli.lightning import make_cli  # Lightning, for fit/validate/...

        return make_cli(args)
    except FashionLightningError as e:
        print(paragraph(str(e)), file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        # Every command writes its files aside and renames them into place: nothing is left
        # half-written. 130 is how shells report a process ended by Ctrl+C (SIGINT).
        command = argv[0] if isinstance(argv, list) and argv else "the command"
        print(f"{command}: stopped by Ctrl+C.", file=sys.stderr)
        raise SystemExit(130) from None
