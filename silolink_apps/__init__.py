"""silolink's built-in Flower apps.

Each folder with a ``pyproject.toml`` (``tabular/``, ``tabular_secagg/``) declares one app in
Flower's layout; their code is the installed package ``silolink_apps.tabular_app`` (its
ServerApp half runs in the coordinator's job process, its ClientApp half at the sites). The
coordinator publishes each as a bundle on first use, and runs it like any user's app.
"""
