# rtk-archive in a container: a slim Python, the package installed from a wheel built in a first
# stage (no compilers or sources left in the image), a non-root user, the console script as the
# entry point. No secret is in any layer: the configuration and the secrets are mounted or
# passed as environment variables when it runs (README "Operating it").
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY storage ./storage
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN groupadd --system --gid 10001 rtk-archive \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/rtk-archive --create-home \
        --shell /usr/sbin/nologin rtk-archive
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 \
    XDG_STATE_HOME=/var/lib/rtk-archive/state
USER 10001:10001
WORKDIR /var/lib/rtk-archive
VOLUME ["/var/lib/rtk-archive"]
ENTRYPOINT ["rtk-archive"]
CMD ["--help"]
