import sys

from methods.registry import cli_main
from methods.grpo.config import PROFILES, GRPOConfig
from methods.grpo.trainer import train

sys.exit(cli_main("grpo", GRPOConfig, PROFILES, train))
