"""The MCP server (issue 11, item 1), driven by the official SDK's own stdio
client: `python -m safepyrun mcp` in a child process."""
import asyncio
import base64
import os
import sys
from pathlib import Path

import pytest

mcp = pytest.importorskip("mcp")
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

from safepyrun import RunPython  # noqa: E402

HERE = Path(__file__).parent
# A hung server must fail the test, never hang `make test`.
LIMIT = 120


def session_run(args, steps, cwd=None):
    """Start `python -m safepyrun mcp ARGS`, initialise, run
    `await steps(session)` and return its result."""
    # The server inherits the test's environment (the sanitizer build needs
    # its LD_PRELOAD and options in the child too).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(HERE / "mcp_tools")] + sys.path),
        XDG_CONFIG_HOME=os.environ["XDG_CONFIG_HOME"], MPLBACKEND="Agg")
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "safepyrun", "mcp", *args],
        env=env, cwd=str(cwd) if cwd else None)

    async def main():
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await steps(session)

    return asyncio.run(asyncio.wait_for(main(), LIMIT))


def text_of(result):
    return "".join(c.text for c in result.content if c.type == "text")


def test_list_tools_gives_the_live_description(tmp_path):
    async def steps(s):
        return await s.list_tools()

    tools = session_run(["--ok-dest", str(tmp_path), "--allow",
                         "h11_tools:stamp"], steps).tools
    assert [t.name for t in tools] == ["python"]
    tool = tools[0]
    assert tool.input_schema["required"] == ["code"]
    assert tool.input_schema["properties"]["code"]["type"] == "string"
    assert (f"writing files outside the allowed directories "
            f"({str(tmp_path)!r})") in tool.description
    assert ("- stamp(path: str) -> str: Touch a file by running a program "
            "(refused unless trusted).") in tool.description
    assert "Printed output (stdout and stderr) is returned" in tool.description


def test_two_calls_share_state_and_return_output_and_value(tmp_path):
    async def steps(s):
        first = await s.call_tool("python", {"code": "x = 20\nprint('hi')"})
        second = await s.call_tool("python", {"code": "x + 22"})
        return first, second

    first, second = session_run([], steps)
    assert not first.is_error and not second.is_error
    assert "hi" in text_of(first)
    assert text_of(second).strip().endswith("42")


def test_refused_write_is_a_tool_error_and_the_server_goes_on(tmp_path):
    ok, target = tmp_path / "ok", tmp_path / "outside.txt"
    ok.mkdir()

    async def steps(s):
        refused = await s.call_tool(
            "python", {"code": f"open({str(target)!r}, 'w').write('x')"})
        allowed = await s.call_tool(
            "python", {"code": f"open({str(ok / 'in.txt')!r}, 'w').write('y')"})
        after = await s.call_tool("python", {"code": "1 + 1"})
        return refused, allowed, after

    refused, allowed, after = session_run(["--ok-dest", str(ok)], steps)
    assert refused.is_error
    text = text_of(refused)
    assert "PermissionError: safepyrun refused to open a file for writing" in text
    assert "Remedy: only the host can allow this, by adding the directory" in text
    assert not target.exists()
    assert not allowed.is_error and (ok / "in.txt").read_text() == "y"
    assert text_of(after).strip().endswith("2")


def test_allowed_host_function_is_callable_and_trusted(tmp_path):
    marker = tmp_path / "m"

    async def steps(s):
        direct = await s.call_tool(
            "python", {"code": f"import subprocess\nsubprocess.run(['touch', {str(marker)!r}])"})
        existed = marker.exists()
        trusted = await s.call_tool("python", {"code": f"stamp({str(marker)!r})"})
        return direct, existed, trusted

    direct, existed, trusted = session_run(
        ["--allow", "h11_tools:stamp"], steps)
    assert direct.is_error and "run a program" in text_of(direct)
    assert not existed
    assert not trusted.is_error and "'stamped'" in text_of(trusted)
    assert marker.exists()


def test_plot_comes_back_as_image_content(tmp_path):
    pytest.importorskip("matplotlib")

    async def steps(s):
        return await s.call_tool("python", {"code": (
            "import matplotlib.pyplot as plt\n"
            "plt.plot([1, 2, 3], [1, 4, 9])\n"
            "None")})

    result = session_run(["--preset", "matplotlib"], steps)
    assert not result.is_error, text_of(result)
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1
    assert images[0].mime_type == "image/png"
    png = base64.b64decode(images[0].data)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_bad_options_exit_with_a_message(tmp_path):
    import subprocess
    out = subprocess.run([sys.executable, "-m", "safepyrun", "mcp", "--allow",
                          "no_such_module_h11:f"], capture_output=True,
                         text=True, timeout=LIMIT, stdin=subprocess.DEVNULL)
    assert out.returncode == 2
    assert out.stderr == ("safepyrun mcp: No module named "
                          "'no_such_module_h11'\n")


HAS_TIMEOUT = "timeout" in __import__("inspect").signature(
    RunPython.__new__).parameters


@pytest.mark.skipif(not HAS_TIMEOUT,
                    reason="RunPython(timeout=) comes with the limits-time branch")
def test_timeout_is_a_tool_error_and_the_server_goes_on():
    async def steps(s):
        slow = await s.call_tool("python", {"code": "while True:\n    pass"})
        after = await s.call_tool("python", {"code": "'alive'"})
        return slow, after

    slow, after = session_run(["--timeout", "1"], steps)
    assert slow.is_error
    assert "TimeoutError" in text_of(slow)
    assert not after.is_error and "'alive'" in text_of(after)


ATTACKS = [
    "raise KeyboardInterrupt",
    "raise SystemExit(3)",
    "import sys\nsys.exit(0)",
    "import asyncio\nraise asyncio.CancelledError()",
    "import asyncio\nasyncio.current_task().cancel()\nawait asyncio.sleep(0)",
    "import asyncio\nasyncio.get_running_loop().stop()\n1",
    "import sys\nsys.stdout.write('{\"jsonrpc\": \"2.0\", \"id\": 999}\\n')",
    "import os\nos.write(1, b'{\"jsonrpc\": \"2.0\"}\\n')",
    "import os\nos.close(0)",
    "import os\nos.dup2(2, 1)",
]


def test_cells_cannot_end_or_derail_the_server():
    async def steps(s):
        results = []
        for code in ATTACKS:
            results.append(await s.call_tool("python", {"code": code}))
        results.append(await s.call_tool("python", {"code": "'still here'"}))
        return results

    results = session_run([], steps)
    assert len(results) == len(ATTACKS) + 1
    assert not results[-1].is_error
    assert text_of(results[-1]).strip().endswith("'still here'")


def test_example_client_config_is_valid_for_the_server():
    import argparse
    import json

    from safepyrun.mcp_server import add_arguments
    config = json.loads((HERE.parent / "examples" / "mcp_config.json")
                        .read_text())
    server = config["mcpServers"]["safepyrun"]
    assert server["command"].endswith("/bin/safepyrun")
    assert server["args"][0] == "mcp"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(server["args"][1:])
    assert args.ok_dest == ["/home/you/llm-out"]
    assert args.preset == ["matplotlib", "pandas"]
    assert args.allow == ["mytools:fetch_report"]
    assert args.timeout == 60.0


HAS_MAX_MEMORY = "max_memory" in __import__("inspect").signature(
    RunPython.__new__).parameters


@pytest.mark.skipif(not HAS_MAX_MEMORY,
                    reason="RunPython(max_memory=) comes with the limits-memory branch")
def test_memory_limit_is_a_tool_error_and_the_server_goes_on():
    async def steps(s):
        big = await s.call_tool("python", {"code": "x = bytearray(500_000_000)"})
        after = await s.call_tool("python", {"code": "'alive'"})
        return big, after

    big, after = session_run(["--max-memory", "100000000"], steps)
    assert big.is_error
    assert "MemoryError" in text_of(big)
    assert not after.is_error and "'alive'" in text_of(after)


@pytest.mark.skipif(HAS_TIMEOUT and HAS_MAX_MEMORY,
                    reason="this build has both limits")
def test_a_limit_this_build_lacks_is_refused_at_start():
    import subprocess
    flag = ["--timeout", "1"] if not HAS_TIMEOUT else ["--max-memory", "1000"]
    out = subprocess.run([sys.executable, "-m", "safepyrun", "mcp", *flag],
                         capture_output=True, text=True, timeout=LIMIT,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 2
    assert out.stderr.startswith(f"safepyrun mcp: {flag[0]}: this build of "
                                 "safepyrun has no ")
