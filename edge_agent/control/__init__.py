"""The agent's side of the control stream: connect, heartbeat, renew, run commands."""
