#!/usr/bin/env bash
# Fetch training/evaluation music from Debian's archive into data/ (not committed).
#
#   bash scripts/get_training_data.sh [DATA_DIR]      (default: data/)
#
# Sources (see ../shared/data.md and docs/models.md):
#   nexuiz-music       GPL-2            ~18 tracks, electronic/industrial/metal   (Ogg Vorbis)
#   singularity-music  CC-BY-SA-3.0     ~16 tracks, electronic/ambient, 48 kHz    (Ogg Vorbis)
#   ufoai-music        per file (CC-BY-SA, CC-BY, GPL-2, PD)  ~64 tracks, orchestral/ambient
#   sonic-pi-samples   mostly CC0       165 short lossless samples (FLAC, 44.1 kHz, 5.4 min): full-band
#                      material for super-resolution training (sr.flow); the Vorbis tracks above
#                      mostly end at 16-19 kHz (scripts/make_fullband_set.py measures each)
# The packages are downloaded with `apt-get download` and unpacked with dpkg-deb into a
# scratch folder; nothing is installed system-wide. The result is
#   DATA_DIR/music/<package>/<track>.ogg   (sonic-pi-samples: <sample>.flac)
# plus DATA_DIR/music/SOURCES.txt (package, version, licence, track list, sha256).
set -euo pipefail
DATA_DIR=${1:-data}
PACKAGES=${PACKAGES:-"nexuiz-music singularity-music ufoai-music sonic-pi-samples"}
mkdir -p "$DATA_DIR/debs" "$DATA_DIR/unpacked" "$DATA_DIR/music"
DATA_DIR=$(cd "$DATA_DIR" && pwd)

cd "$DATA_DIR/debs"
for pkg in $PACKAGES; do
  if ! ls "${pkg}"_*.deb >/dev/null 2>&1; then
    apt-get download "$pkg"
  fi
done

SOURCES="$DATA_DIR/music/SOURCES.txt"
: > "$SOURCES"
for deb in "$DATA_DIR"/debs/*.deb; do
  pkg=$(dpkg-deb -f "$deb" Package)
  ver=$(dpkg-deb -f "$deb" Version)
  out="$DATA_DIR/unpacked/$pkg"
  [ -d "$out" ] || dpkg-deb -x "$deb" "$out"
  dest="$DATA_DIR/music/$pkg"
  mkdir -p "$dest"
  case "$pkg" in
    nexuiz-music)
      unzip -o -q -j "$out/usr/share/games/nexuiz/data/music.pk3" 'sound/cdtracks/*.ogg' -d "$dest" ;;
    ufoai-music)
      unzip -o -q -j "$out/usr/share/games/ufoai/base/0music.pk3" 'music/*.ogg' -d "$dest" ;;
    singularity-music)
      find "$out/usr/share/games/singularity/music" -name '*.ogg' -exec cp {} "$dest/" \; ;;
    sonic-pi-samples)
      find "$out/usr/share/sonic-pi/samples" -maxdepth 1 -name '*.flac' -exec cp {} "$dest/" \; ;;
    *)
      find "$out" -name '*.ogg' -exec cp {} "$dest/" \; ;;
  esac
  copyright=$(find "$out/usr/share/doc/$pkg" -name copyright | head -1)
  {
    echo "## $pkg $ver"
    echo "licence: see $pkg's debian/copyright (copied to music/$pkg/COPYRIGHT)"
    (cd "$dest" && find . -maxdepth 1 \( -name '*.ogg' -o -name '*.flac' \) -printf '%f\0' | sort -z | xargs -0 sha256sum --)
    echo
  } >> "$SOURCES"
  [ -n "$copyright" ] && cp "$copyright" "$dest/COPYRIGHT"
done
echo "tracks: $(find "$DATA_DIR/music" -name '*.ogg' -o -name '*.flac' | wc -l) in $DATA_DIR/music (list: $SOURCES)"
