"""vlmrepro's shared backend: types, models, rollouts, scoring, rewards, losses, data, trainer.

It knows no paper; methods compose it (see ``methods/``)."""
