"""Policy and value networks."""

from kfcpo.models.actor import GaussianActor
from kfcpo.models.critic import COST, REWARD, Critics

__all__ = ["COST", "REWARD", "Critics", "GaussianActor"]
