import sys

from methods.registry import cli_main
from methods.reopold.config import PROFILES, REOPOLDConfig
from methods.reopold.trainer import train

sys.exit(cli_main("reopold", REOPOLDConfig, PROFILES, train))
