import sys

from methods.opd.config import PROFILES, OPDConfig
from methods.opd.trainer import train
from methods.registry import cli_main

sys.exit(cli_main("opd", OPDConfig, PROFILES, train))
