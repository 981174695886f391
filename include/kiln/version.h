/*
 * kiln version macros. The version is part of every kernel cache key, so a
 * new release never loads a binary built by an older one.
 */
#ifndef KILN_VERSION_H
#define KILN_VERSION_H

#define KILN_VERSION_MAJOR 0
#define KILN_VERSION_MINOR 1
#define KILN_VERSION_PATCH 0
#define KILN_VERSION_STRING "0.1.0"

/* One integer that orders releases: 10000*MAJOR + 100*MINOR + PATCH. */
#define KILN_VERSION_NUMBER                                                   \
  (KILN_VERSION_MAJOR * 10000 + KILN_VERSION_MINOR * 100 + KILN_VERSION_PATCH)

#endif /* KILN_VERSION_H */
