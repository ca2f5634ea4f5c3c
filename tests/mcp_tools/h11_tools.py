"""A host module for the MCP tests: a function the server trusts with
``--allow h11_tools:stamp``."""
import subprocess


def stamp(path: str) -> str:
    """Touch a file by running a program (refused unless trusted)."""
    subprocess.run(["touch", path], check=True)
    return "stamped"
