"""`python -m mcp_app.bridge`: the bridge, run from the server's own environment.

The bridge is its own distribution (bridge/, `backflow-mcp` on a desktop's PATH, no Django);
`make` installs it into the project's venv too, and this module keeps the contract's module name.
"""

from backflow_bridge.bridge import main

if __name__ == "__main__":
    main()
