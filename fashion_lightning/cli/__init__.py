"""The command line: one entry (`main.cli_main`), Lightning's fit/validate/test/predict through
the project's LightningCLI (`lightning`), the project's own commands by name (`commands`), and the
shipped recipes (`recipes`)."""

from fashion_lightning.moved import forward_attributes

__getattr__ = forward_attributes("fashion_lightning.cli.main")  # `fashion_lightning.cli.cli_main`
