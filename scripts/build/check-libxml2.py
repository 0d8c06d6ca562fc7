"""Fail the image build when lxml and xmlsec do not use the same libxml2.

python3-saml hands lxml's documents to xmlsec: with two libxml2 versions in one process
it crashes or refuses at import. A tree without xmlsec has nothing to check."""

import importlib.util
import sys

if importlib.util.find_spec("xmlsec") is None:
    sys.exit(0)

# (an exception would not do: under `uwsgi --pyrun` it still exits 0)
try:
    import lxml.etree
    import xmlsec
except Exception as error:  # xmlsec refuses to load when it sees another libxml2
    sys.exit(f"check-libxml2: {error!r}")

ours = lxml.etree.LIBXML_VERSION
theirs = xmlsec.get_libxml_version()
if ours != theirs:
    sys.exit(f"check-libxml2: lxml uses libxml2 {ours}, xmlsec {theirs}: pin a matching pair")
print(f"check-libxml2: lxml and xmlsec share libxml2 {'.'.join(map(str, ours))}")
