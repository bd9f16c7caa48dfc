import sys

from methods.registry import cli_main
from methods.sft.config import PROFILES, SFTConfig
from methods.sft.trainer import train

sys.exit(cli_main("sft", SFTConfig, PROFILES, train))
