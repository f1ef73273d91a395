# Adds every immediate subdirectory of the current source dir that has a CMakeLists.txt, in
# sorted order, so each component owns its own build file.
function(wf_add_subdirectories)
  file(GLOB children LIST_DIRECTORIES true CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*)
  list(SORT children)
  foreach(child ${children})
    if(IS_DIRECTORY ${child} AND EXISTS ${child}/CMakeLists.txt)
      add_subdirectory(${child})
    endif()
  endforeach()
endfunction()

# wf_add_test(NAME name SOURCES a.cc b.cc LIBS lib... LABELS unit|integration|deploy [TIMEOUT s])
# Builds a GoogleTest executable and registers it with CTest under its label, so each tier can
# run alone: ctest -L unit.
function(wf_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  # Developer convenience while several people edit one tree: skip a test whose sources are not
  # written yet instead of failing the whole configure. Off by default (and in CI).
  if(WF_SKIP_INCOMPLETE_TESTS)
    foreach(src ${T_SOURCES})
      if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${src})
        message(WARNING "skipping ${T_NAME}: ${src} does not exist yet")
        return()
      endif()
    endforeach()
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main GTest::gmock)
  set_target_properties(${T_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "WF_BIN_DIR=${CMAKE_BINARY_DIR}/bin;WF_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endfunction()
