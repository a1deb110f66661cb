# hoso worker image: the flows with Tesseract (vie), poppler and the signing stack.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      tesseract-ocr tesseract-ocr-vie tesseract-ocr-script-viet poppler-utils qpdf ghostscript \
      softhsm2 opensc fonts-noto-core fonts-liberation \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline pipeline
COPY ocr ocr
COPY signing signing
COPY storage storage
COPY flows flows
RUN pip install --no-cache-dir .
ENV HOSO_DATA_DIR=/var/lib/hoso
CMD ["python", "-m", "flows.serve"]
