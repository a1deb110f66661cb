from pipeline.cli.app import app

app(prog_name="hoso")
