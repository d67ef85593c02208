"""Site notes: a worked example of a silolink coordinator extension."""
