import sys

from methods.ptdpo.config import PROFILES, PTDPOConfig
from methods.ptdpo.trainer import train
from methods.registry import cli_main

sys.exit(cli_main("ptdpo", PTDPOConfig, PROFILES, train))
