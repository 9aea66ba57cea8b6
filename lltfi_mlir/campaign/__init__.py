"""Fault-injection campaigns: configuration, trial planning, execution, outcomes, results."""

from .campaign import Campaign
from .config import CampaignConfig, FaultConfig, SdcConfig, load_config

__all__ = ["Campaign", "CampaignConfig", "FaultConfig", "SdcConfig", "load_config"]
