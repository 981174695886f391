# kiln_embed(OUT SYMBOL FILES...): concatenates FILES into one C string
# `const char SYMBOL[]` in OUT, regenerated whenever a file changes. Bytes
# are written as hex so no escaping rules apply.
function(kiln_embed out symbol)
  set(files ${ARGN})
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DOUT=${out} -DSYMBOL=${symbol}
            "-DFILES=${files}" -P ${CMAKE_SOURCE_DIR}/cmake/embed_run.cmake
    DEPENDS ${files} ${CMAKE_SOURCE_DIR}/cmake/embed_run.cmake
    COMMENT "Embedding ${symbol}"
    VERBATIM)
endfunction()
