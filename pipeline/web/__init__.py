"""The web interface (``hoso serve``): citizen pages, staff pages and the REST API over the use cases."""
