#!/usr/bin/env bash
# Fetch training/evaluation music from Debian's archive into data/ (not committed).
#
#   bash scripts/get_training_data.sh [--extra] [DATA_DIR]      (default: data/)
#
# Sources (see ../shared/data.md and docs/models.md):
#   nexuiz-music       GPL-2            ~18 tracks, electronic/industrial/metal   (Ogg Vorbis)
#   singularity-music  CC-BY-SA-3.0     ~16 tracks, electronic/ambient, 48 kHz    (Ogg Vorbis)
#   ufoai-music        per file (CC-BY-SA, CC-BY, GPL-2, PD)  ~64 tracks, orchestral/ambient
#   sonic-pi-samples   mostly CC0       165 short lossless samples (FLAC, 44.1 kHz, 5.4 min): full-band
#                      material for super-resolution training (sr.flow); the Vorbis tracks above
#                      mostly end at 16-19 kHz (scripts/make_fullband_set.py measures each)
# With --extra, also (2 GB of downloads, 277 MB of music; used by srenvelope v4, docs/models.md):
#   0ad-data           CC-BY-SA-3.0     61 tracks, orchestral/world (Vorbis, from public.zip)
#   supertuxkart-data  per file         38 tracks, mixed (Vorbis, mixed rates)
# The packages are downloaded with `apt-get download` and unpacked with dpkg-deb into a
# scratch folder (only the music and the copyright of the two large ones); nothing is
# installed system-wide. The result is
#   DATA_DIR/music/<package>/<track>.ogg   (sonic-pi-samples: <sample>.flac)
#   DATA_DIR/music-extra/<package>/<track>.ogg   (--extra)
# plus SOURCES.txt in each (package, version, licence, track list, sha256). The extra
# packages live in their own folder so that `--data data/music` means the same files as
# before; their tracks split into train/val/test by name like every other file.
set -euo pipefail
EXTRA=0
if [ "${1:-}" = "--extra" ]; then EXTRA=1; shift; fi
DATA_DIR=${1:-data}
PACKAGES=${PACKAGES:-"nexuiz-music singularity-music ufoai-music sonic-pi-samples"}
EXTRA_PACKAGES="0ad-data supertuxkart-data"
mkdir -p "$DATA_DIR/debs" "$DATA_DIR/unpacked" "$DATA_DIR/music"
DATA_DIR=$(cd "$DATA_DIR" && pwd)

fetch() {  # fetch PACKAGE... into DATA_DIR/debs
  (cd "$DATA_DIR/debs" && for pkg in "$@"; do
     ls "${pkg}"_*.deb >/dev/null 2>&1 || apt-get download "$pkg"
   done)
}

unpack() {  # unpack PACKAGE DEST: its music into DEST/PACKAGE, a section into DEST/SOURCES.txt
  local pkg=$1 music=$2
  local deb out dest ver
  deb=$(ls "$DATA_DIR/debs/${pkg}"_*.deb | head -1)
  ver=$(dpkg-deb -f "$deb" Version)
  out="$DATA_DIR/unpacked/$pkg"
  dest="$music/$pkg"
  mkdir -p "$dest" "$out"
  case "$pkg" in
    0ad-data)  # 3 GB installed: take only the archive that holds the music
      [ -f "$out/usr/share/games/0ad/mods/public/public.zip" ] || dpkg-deb --fsys-tarfile "$deb" |
        tar -x -C "$out" --wildcards './usr/share/games/0ad/mods/public/public.zip' "./usr/share/doc/$pkg/*"
      unzip -o -q -j "$out/usr/share/games/0ad/mods/public/public.zip" 'audio/music/*.ogg' -d "$dest" ;;
    supertuxkart-data)
      [ -d "$out/usr/share/games/supertuxkart/data/music" ] || dpkg-deb --fsys-tarfile "$deb" |
        tar -x -C "$out" --wildcards './usr/share/games/supertuxkart/data/music/*' "./usr/share/doc/$pkg/*"
      find "$out/usr/share/games/supertuxkart/data/music" -name '*.ogg' -exec cp {} "$dest/" \; ;;
    *)
      [ -n "$(ls -A "$out")" ] || dpkg-deb -x "$deb" "$out"
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
      esac ;;
  esac
  local copyright
  copyright=$(find "$out/usr/share/doc/$pkg" -name copyright | head -1)
  {
    echo "## $pkg $ver"
    echo "licence: see $pkg's debian/copyright (copied to $(basename "$music")/$pkg/COPYRIGHT)"
    (cd "$dest" && find . -maxdepth 1 \( -name '*.ogg' -o -name '*.flac' \) -printf '%f\0' | sort -z | xargs -0 sha256sum --)
    echo
  } >> "$music/SOURCES.txt"
  [ -n "$copyright" ] && cp "$copyright" "$dest/COPYRIGHT"
}

fetch $PACKAGES
: > "$DATA_DIR/music/SOURCES.txt"
for pkg in $(printf "%s\n" $PACKAGES | sort); do unpack "$pkg" "$DATA_DIR/music"; done
echo "tracks: $(find "$DATA_DIR/music" -name '*.ogg' -o -name '*.flac' | wc -l) in $DATA_DIR/music (list: $DATA_DIR/music/SOURCES.txt)"
if [ "$EXTRA" = 1 ]; then
  mkdir -p "$DATA_DIR/music-extra"
  fetch $EXTRA_PACKAGES
  : > "$DATA_DIR/music-extra/SOURCES.txt"
  for pkg in $EXTRA_PACKAGES; do unpack "$pkg" "$DATA_DIR/music-extra"; done
  echo "tracks: $(find "$DATA_DIR/music-extra" -name '*.ogg' | wc -l) in $DATA_DIR/music-extra (list: $DATA_DIR/music-extra/SOURCES.txt)"
fi
