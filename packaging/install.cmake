# install.cmake: where `cmake --install` puts everything, and the Debian packages CPack makes
# of it (one per program: ops-manager, ops-daemon, opsctl). Included by the top CMakeLists.txt
# after the program targets; each block is guarded by if(TARGET ...) so a tree without one of
# the programs (opsctl before it lands) still installs and packages the others.
#
# Layout with -DCMAKE_INSTALL_PREFIX=/usr (what the packages use): programs in /usr/sbin and
# /usr/bin, conffiles in /etc/ops and /etc/logrotate.d, units in /lib/systemd/system (Debian 12),
# man pages in /usr/share/man, docs and the annotated examples in /usr/share/doc/<package>.
include(GNUInstallDirs)

if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(_ops_unitdir_default /lib/systemd/system)
else()
  set(_ops_unitdir_default ${CMAKE_INSTALL_LIBDIR}/systemd/system)
endif()
set(OPS_SYSTEMD_UNITDIR ${_ops_unitdir_default} CACHE STRING "where the systemd units go")
set(OPS_CONFDIR ${CMAKE_INSTALL_FULL_SYSCONFDIR}/ops)
set(OPS_LOGROTATEDIR ${CMAKE_INSTALL_FULL_SYSCONFDIR}/logrotate.d)
set(OPS_PKG_DIR ${CMAKE_SOURCE_DIR}/packaging)
set(OPS_MAN_OUT ${CMAKE_BINARY_DIR}/man)
file(MAKE_DIRECTORY ${OPS_MAN_OUT})

find_program(OPS_AWK NAMES gawk mawk awk REQUIRED)
find_program(OPS_GZIP gzip REQUIRED)

# Man pages, generated at build time: section 5 from the annotated configs (configs/*.yaml,
# the one source of every key and default, via docs/man/yaml2man.awk), sections 1 and 8 from
# docs/man/*.in with the version filled in. Installed gzipped (-n: reproducible).
set(_ops_man_pages)
function(ops_man page section) # [CONFIG file FREEFORM "k1 k2"]
  cmake_parse_arguments(M "" "CONFIG;FREEFORM" "" ${ARGN})
  set(src ${CMAKE_SOURCE_DIR}/docs/man/${page}.${section}.in)
  set(out ${OPS_MAN_OUT}/${page}.${section})
  if(M_CONFIG)
    add_custom_command(OUTPUT ${out}
      COMMAND ${OPS_AWK} -f ${CMAKE_SOURCE_DIR}/docs/man/yaml2man.awk -v template=${src}
              -v version=${PROJECT_VERSION} "-v" "freeform=${M_FREEFORM}" ${M_CONFIG} > ${out}
      DEPENDS ${src} ${M_CONFIG} ${CMAKE_SOURCE_DIR}/docs/man/yaml2man.awk
      COMMENT "man ${page}(${section})" VERBATIM)
  else()
    add_custom_command(OUTPUT ${out}
      COMMAND sed "s/@VERSION@/${PROJECT_VERSION}/g" ${src} > ${out}
      DEPENDS ${src} COMMENT "man ${page}(${section})" VERBATIM)
  endif()
  add_custom_command(OUTPUT ${out}.gz
    COMMAND ${OPS_GZIP} -9nc ${out} > ${out}.gz
    DEPENDS ${out} VERBATIM)
  set(_ops_man_pages ${_ops_man_pages} ${out}.gz PARENT_SCOPE)
endfunction()

ops_man(ops-manager 8)
ops_man(ops-daemon 8)
ops_man(opsctl 1)
ops_man(ops-manager.yaml 5 CONFIG ${CMAKE_SOURCE_DIR}/configs/manager.yaml)
ops_man(ops-daemon.yaml 5 CONFIG ${CMAKE_SOURCE_DIR}/configs/daemon.yaml FREEFORM "labels agents[].env")
add_custom_target(ops_man ALL DEPENDS ${_ops_man_pages})

set(_ops_components)

# One package's files besides its program: conffiles, unit, logrotate snippet, man pages,
# docs. comp is the CPack component, pkg the package (and doc directory) name.
function(ops_install_service comp pkg cfg section)
  install(FILES ${OPS_PKG_DIR}/etc/${cfg}.yaml DESTINATION ${OPS_CONFDIR} COMPONENT ${comp})
  install(FILES ${OPS_PKG_DIR}/systemd/${pkg}.service DESTINATION ${OPS_SYSTEMD_UNITDIR} COMPONENT ${comp})
  install(FILES ${OPS_PKG_DIR}/logrotate/${pkg} DESTINATION ${OPS_LOGROTATEDIR} COMPONENT ${comp})
  install(FILES ${OPS_MAN_OUT}/${pkg}.${section}.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section} COMPONENT ${comp})
  install(FILES ${OPS_MAN_OUT}/${pkg}.yaml.5.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man5 COMPONENT ${comp})
  install(FILES ${CMAKE_SOURCE_DIR}/docs/operator-guide.md ${CMAKE_SOURCE_DIR}/README.md
          DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/${pkg} COMPONENT ${comp})
  install(FILES ${CMAKE_SOURCE_DIR}/configs/${cfg}.yaml
          DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/${pkg}/examples COMPONENT ${comp})
  # dpkg keeps a conffile the admin edited across upgrades (and asks when both changed).
  set(dir ${CMAKE_BINARY_DIR}/debian/${comp})
  file(MAKE_DIRECTORY ${dir})
  file(WRITE ${dir}/conffiles "${OPS_CONFDIR}/${cfg}.yaml\n${OPS_LOGROTATEDIR}/${pkg}\n")
  foreach(s postinst prerm postrm)
    configure_file(${OPS_PKG_DIR}/debian/${pkg}.${s} ${dir}/${s} COPYONLY)
  endforeach()
  string(TOUPPER ${comp} C)
  set(CPACK_DEBIAN_${C}_PACKAGE_CONTROL_EXTRA
      "${dir}/conffiles;${dir}/postinst;${dir}/prerm;${dir}/postrm" PARENT_SCOPE)
endfunction()

if(TARGET ops-manager)
  install(TARGETS ops-manager RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR} COMPONENT manager)
  ops_install_service(manager ops-manager manager 8)
  list(APPEND _ops_components manager)
endif()
if(TARGET ops-daemon)
  install(TARGETS ops-daemon RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR} COMPONENT daemon)
  ops_install_service(daemon ops-daemon daemon 8)
  list(APPEND _ops_components daemon)
endif()
if(TARGET opsctl)
  install(TARGETS opsctl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT ctl)
  install(FILES ${OPS_MAN_OUT}/opsctl.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT ctl)
  install(FILES ${CMAKE_SOURCE_DIR}/docs/operator-guide.md DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/opsctl COMPONENT ctl)
  list(APPEND _ops_components ctl)
endif()

# --- CPack: one .deb per component --------------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ops)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "ops maintainers <ops@localhost>")
set(CPACK_PACKAGE_VENDOR "ops")
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_STRIP_FILES TRUE)
set(CPACK_COMPONENTS_ALL ${_ops_components})
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Runtime dependencies come from the ELF files (dpkg-shlibdeps): libgrpc, libprotobuf-c,
# libcyaml, libsystemd0 ... with the versions this build needs.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# Maintainer scripts 0755, conffiles 0644, whatever the source tree's modes.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

set(CPACK_DEBIAN_MANAGER_PACKAGE_NAME ops-manager)
set(CPACK_DEBIAN_MANAGER_PACKAGE_DEPENDS "adduser")
set(CPACK_COMPONENT_MANAGER_DESCRIPTION "ops fleet manager (central gRPC server)
ops-manager is the central server of an ops fleet: daemons register, heartbeat and report
metrics and agent states to it, and operators act on the fleet through it with opsctl.
It keeps the fleet's state in SQLite (or PostgreSQL) and runs as the system user ops.")
set(CPACK_DEBIAN_DAEMON_PACKAGE_NAME ops-daemon)
set(CPACK_COMPONENT_DAEMON_DESCRIPTION "ops fleet daemon (agent supervisor)
ops-daemon runs on every host of an ops fleet: it starts and supervises the host's agents
(ordinary programs), samples their resources and the host's, and reports to ops-manager.
Agents keep running while the daemon restarts or is upgraded.")
set(CPACK_DEBIAN_CTL_PACKAGE_NAME opsctl)
set(CPACK_COMPONENT_CTL_DESCRIPTION "ops fleet command line (opsctl)
opsctl is the operator's command line for an ops fleet: nodes, agents, metrics and
agent operations, through ops-manager's AdminService.")
include(CPack)
