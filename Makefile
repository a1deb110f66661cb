.PHONY: setup demo test test-fast lint
setup:
	./bootstrap.sh setup
demo:
	./bootstrap.sh demo
test:
	./bootstrap.sh test
test-fast:
	./bootstrap.sh test -m "not slow"
lint:
	.venv/bin/ruff check pipeline ocr signing storage flows tests bench
	.venv/bin/mypy pipeline ocr signing storage flows
