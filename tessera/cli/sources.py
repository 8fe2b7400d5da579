"""Getting data in: the pre-set import workbook and the push endpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tessera.cli.common import setup_env

REGISTRIES = ["b2c_users", "b2b_companies", "b2b_company_users", "potential_companies"]


@click.command("template", short_help="Write a registry's import workbook.")
@click.argument("registry", type=click.Choice(REGISTRIES), metavar="REGISTRY")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="the .xlsx file to write")
@click.option("--source-name", default="xlsx_import", show_default=True,
              help="name of the xlsx source printed for sources.yaml")
@click.option("--node", help="node of that source (default: the first of tree.priority)")
@click.pass_context
def template_cmd(ctx: click.Context, registry: str, out: str, source_name: str,
                 node: str | None) -> int:
    """Write the pre-set import workbook of a registry.

    REGISTRY is b2c_users, b2b_companies, b2b_company_users or potential_companies. Reads
    --config only (no warehouse), and prints the matching sources.yaml entry.
    """
    from tessera.deployment import load_deployment
    from tessera.ingest.templates import source_yaml, template_source, write_template
    from tessera.settings.paths import config_folder

    deployment = load_deployment(config_folder((ctx.find_root().obj or {}).get("config")))
    written = write_template(deployment, registry, Path(out))
    print(f"wrote the {registry} import workbook to {written}")
    node = node or deployment.tree.priority[0]
    src = template_source(deployment, registry, source_name, node, f"{source_name}/*.xlsx")
    print("\nto load filled-in copies, add this source to sources.yaml "
          f"and drop the files into <landing>/{source_name}/:\n")
    print(source_yaml(src))
    return 0


@click.command("serve-push", short_help="Serve the push sources' endpoint.")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=int, default=8787, show_default=True, help="port to listen on")
@click.pass_context
def serve_push_cmd(ctx: click.Context, host: str, port: int) -> int:
    """Serve the authenticated push endpoint of the push sources until interrupted.

    Records land in the landing folder for the next run.
    """
    import logging

    setup_env(ctx)
    from tessera.deployment import load_deployment
    from tessera.ingest.push import PushConfigError, make_server
    from tessera.settings.paths import tessera_paths

    paths = tessera_paths()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        server = make_server(load_deployment(paths["config"]), paths["landing"], host, port)
    except PushConfigError as exc:
        print(f"serve-push: {exc}", file=sys.stderr)
        return 2
    bound_host, bound_port = server.server_address[:2]
    print(f"push endpoint on http://{bound_host}:{bound_port}/v1/sources/<source>/records "
          f"(landing {paths['landing']}/_push/)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("push endpoint stopped", flush=True)  # Ctrl-C is the normal way to stop it
    finally:
        server.server_close()
    return 0


COMMANDS = [template_cmd, serve_push_cmd]
