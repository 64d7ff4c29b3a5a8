# The base of agents' images for `runtime: docker`: a shell, git, tmux,
# python3 and common build tools (make, gcc) from the Debian base of
# scripts/images, and a non-root user. Extend it with your agent's CLI:
#
#   FROM ao-agent-base:latest
#   RUN npm install -g @anthropic-ai/claude-code   # with a registry at hand
#
# The worker runs sessions as the worktree's owner (--user uid:gid), so
# the user below is only the default for `docker run` by hand.
ARG BASE=ao-debian:latest
FROM ${BASE}
RUN useradd --create-home --uid 1000 --shell /bin/bash agent \
 && git config --system init.defaultBranch main \
 && git config --system safe.directory '*'
ENV LANG=C.UTF-8 TERM=xterm-256color
USER agent
WORKDIR /home/agent
CMD ["/bin/bash"]
