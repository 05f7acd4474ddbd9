#!/bin/sh
# Runs the GNU Radio 3.10 peer baselines (install: apt-get install gnuradio) and prints one summary line per
# configuration. Redirect to a file of your own to keep the figures.
set -e
here="$(cd "$(dirname "$0")" && pwd)"
PY=/usr/bin/python3   # Debian's python3 carries the gnuradio bindings
echo "# $(date -u +%FT%TZ) $(uname -srm) nproc=$(nproc)"
$PY "$here/gr_chain.py" --type f --source null --stages 4 --n 1e9 --repeat 5
$PY "$here/gr_chain.py" --type c --source null --stages 4 --n 5e8 --repeat 5
$PY "$here/gr_chain.py" --type f --source sig  --stages 4 --n 5e8 --repeat 3
$PY "$here/gr_zmq.py" run --type f --pattern push --n 5e8 --repeat 3
$PY "$here/gr_zmq.py" run --type c --pattern push --n 2.5e8 --repeat 3
$PY "$here/gr_zmq.py" run --type f --pattern pub  --n 5e8 --repeat 3
$PY "$here/gr_zmq.py" run --type c --pattern pub  --n 2.5e8 --repeat 3

# Sources that write every item on every call (sig_source, GR_CONST_WAVE); see gr_chain.py's docstring.
$PY "$here/gr_chain.py" --type f --source const --stages 4 --n 1e9 --repeat 5
$PY "$here/gr_chain.py" --type c --source const --stages 4 --n 5e8 --repeat 5
$PY "$here/gr_zmq.py" run --type f --source const --pattern push --n 5e8 --repeat 3
$PY "$here/gr_zmq.py" run --type c --source const --pattern push --n 2.5e8 --repeat 3
