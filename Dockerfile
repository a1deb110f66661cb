# hoso image (worker and national-database service): the flows with Tesseract (vie), poppler and the signing
# stack. Production mode by default: run it with real keys and credentials (docker-compose.yml, README).
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
RUN pip install --no-cache-dir . \
 && groupadd --system --gid 10001 hoso \
 && useradd --system --uid 10001 --gid hoso --home-dir /var/lib/hoso --shell /usr/sbin/nologin hoso \
 && install -d -o hoso -g hoso -m 0750 /var/lib/hoso
ENV HOSO_MODE=production \
    HOSO_DATA_DIR=/var/lib/hoso
USER hoso
CMD ["python", "-m", "flows.serve"]
