.PHONY: setup demo test lint
setup:
	./bootstrap.sh setup
demo:
	./bootstrap.sh demo
test:
	./bootstrap.sh test
lint:
	.venv/bin/ruff check pipeline ocr signing storage flows tests bench
	.venv/bin/mypy pipeline ocr signing storage flows
